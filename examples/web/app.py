"""A small web app served by ``http-server``: an HTML page, and the JSON API its script calls.

One task serves both, routing on the request's path (``request.meta``, see docs/http.md):

    GET  /                     the page
    GET  /api/greeting?name=N  {"greeting": "Hello, N!", "method": "GET", "peer": "..."}
    POST /api/echo             the posted JSON, back, with its size
"""

import json
from urllib.parse import parse_qs

from cocaine.python import Response

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>cocaine web example</title></head>
<body>
  <h1>cocaine web example</h1>
  <p id="greeting">loading...</p>
  <script>
    fetch("/api/greeting?name=browser")
      .then((response) => response.json())
      .then((data) => { document.getElementById("greeting").textContent = data.greeting; })
      .catch((error) => { document.getElementById("greeting").textContent = "failed: " + error; });
  </script>
</body>
</html>
"""

HTML = {"Content-Type": "text/html; charset=utf-8"}
JSON = {"Content-Type": "application/json"}


def web(request):
    meta = request.meta
    path, method = meta["path"], meta["method"]
    if path == "/" and method in ("GET", "HEAD"):
        return Response(PAGE, headers=HTML)
    if path == "/api/greeting" and method in ("GET", "HEAD"):
        name = parse_qs(meta["query"]).get("name", ["world"])[0]
        return _json({"greeting": f"Hello, {name}!", "method": method, "peer": meta["peer"]})
    if path == "/api/echo" and method == "POST":
        try:
            data = request.json()
        except ValueError as e:
            return _json({"error": f"the body is not JSON: {e}"}, status=400)
        return _json({"echo": data, "bytes": len(request.body)})
    return _json({"error": f"no route for {method} {path}"}, status=404)


def _json(data, status=200):
    return Response(json.dumps(data) + "\n", status=status, headers=JSON)

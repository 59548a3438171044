"""The echo app both benchmarks serve (the baseline worker implements the same thing by hand)."""


def echo(request):
    return request.body

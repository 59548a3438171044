// A small msgpack encoder and decoder: the subset of the spec the worker protocol uses (every type
// but ext). Encoding follows msgpack-python's choices, the smallest format for each value (and
// float 64 for doubles), so the host's frames equal tests/vectors/protocol.json byte for byte.
//
// Part of the cocaine C++ SDK; the worker host uses it, apps do not need to.
#pragma once

#include <cocaine/value.hpp>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

namespace cocaine::msgpack {

class DecodeError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class Writer {
public:
    explicit Writer(std::string& out) : out_(out) {}

    void nil() { byte(0xc0); }
    void boolean(bool b) { byte(b ? 0xc3 : 0xc2); }
    void uinteger(uint64_t u) {
        if (u < 0x80) byte(static_cast<uint8_t>(u));
        else if (u <= 0xff) { byte(0xcc); big_endian(u, 1); }
        else if (u <= 0xffff) { byte(0xcd); big_endian(u, 2); }
        else if (u <= 0xffffffffu) { byte(0xce); big_endian(u, 4); }
        else { byte(0xcf); big_endian(u, 8); }
    }
    void integer(int64_t i) {
        if (i >= 0) return uinteger(static_cast<uint64_t>(i));
        if (i >= -32) byte(static_cast<uint8_t>(i));
        else if (i >= INT8_MIN) { byte(0xd0); big_endian(static_cast<uint64_t>(i), 1); }
        else if (i >= INT16_MIN) { byte(0xd1); big_endian(static_cast<uint64_t>(i), 2); }
        else if (i >= INT32_MIN) { byte(0xd2); big_endian(static_cast<uint64_t>(i), 4); }
        else { byte(0xd3); big_endian(static_cast<uint64_t>(i), 8); }
    }
    void float64(double d) {
        uint64_t bits;
        std::memcpy(&bits, &d, sizeof bits);
        byte(0xcb);
        big_endian(bits, 8);
    }
    void float32(float f) {
        uint32_t bits;
        std::memcpy(&bits, &f, sizeof bits);
        byte(0xca);
        big_endian(bits, 4);
    }
    void str(std::string_view s) {
        if (s.size() < 32) byte(static_cast<uint8_t>(0xa0 | s.size()));
        else header(s.size(), 0xd9, 0xda, 0xdb);
        out_.append(s);
    }
    void bin(std::string_view b) {
        header(b.size(), 0xc4, 0xc5, 0xc6);
        out_.append(b);
    }
    void array(std::size_t n) {
        if (n < 16) byte(static_cast<uint8_t>(0x90 | n));
        else header16or32(n, 0xdc, 0xdd);
    }
    void map(std::size_t n) {
        if (n < 16) byte(static_cast<uint8_t>(0x80 | n));
        else header16or32(n, 0xde, 0xdf);
    }
    void value(const Value& v) {
        switch (v.type()) {
        case Value::Type::nil: return nil();
        case Value::Type::boolean: return boolean(v.as_bool());
        case Value::Type::integer: return v.is_negative() ? integer(v.as_int()) : uinteger(v.as_uint());
        case Value::Type::float32: return float32(static_cast<float>(v.as_double()));
        case Value::Type::float64: return float64(v.as_double());
        case Value::Type::str: return str(v.as_string());
        case Value::Type::bin: return bin(v.as_string());
        case Value::Type::array:
            array(v.as_array().size());
            for (const auto& item : v.as_array()) value(item);
            return;
        case Value::Type::map:
            map(v.as_map().size());
            for (const auto& [key, item] : v.as_map()) { value(key); value(item); }
            return;
        }
    }

private:
    void byte(uint8_t b) { out_.push_back(static_cast<char>(b)); }
    void big_endian(uint64_t u, int bytes) {
        for (int shift = 8 * (bytes - 1); shift >= 0; shift -= 8) byte(static_cast<uint8_t>(u >> shift));
    }
    void header(std::size_t n, uint8_t f8, uint8_t f16, uint8_t f32) {
        if (n <= 0xff) { byte(f8); big_endian(n, 1); }
        else header16or32(n, f16, f32);
    }
    void header16or32(std::size_t n, uint8_t f16, uint8_t f32) {
        if (n <= 0xffff) { byte(f16); big_endian(n, 2); }
        else { byte(f32); big_endian(n, 4); }
    }

    std::string& out_;
};

class Reader {
public:
    explicit Reader(std::string_view data) : p_(reinterpret_cast<const uint8_t*>(data.data())),
                                             end_(p_ + data.size()) {}

    bool at_end() const { return p_ == end_; }

    Value read(int depth = 0) {
        if (depth > max_depth) throw DecodeError("msgpack nested deeper than 64 levels");
        uint8_t b = take(1)[0];
        if (b <= 0x7f) return Value::uinteger(b);
        if (b >= 0xe0) return Value::integer(static_cast<int8_t>(b));
        if ((b & 0xf0) == 0x80) return read_map(b & 0x0f, depth);
        if ((b & 0xf0) == 0x90) return read_array(b & 0x0f, depth);
        if ((b & 0xe0) == 0xa0) return Value::str(bytes(b & 0x1f));
        switch (b) {
        case 0xc0: return Value();
        case 0xc2: return Value::boolean(false);
        case 0xc3: return Value::boolean(true);
        case 0xc4: return Value::bin(bytes(number(1)));
        case 0xc5: return Value::bin(bytes(number(2)));
        case 0xc6: return Value::bin(bytes(number(4)));
        case 0xca: {
            uint32_t bits = static_cast<uint32_t>(number(4));
            float f;
            std::memcpy(&f, &bits, sizeof f);
            return Value::float32(f);
        }
        case 0xcb: {
            uint64_t bits = number(8);
            double d;
            std::memcpy(&d, &bits, sizeof d);
            return Value::float64(d);
        }
        case 0xcc: return Value::uinteger(number(1));
        case 0xcd: return Value::uinteger(number(2));
        case 0xce: return Value::uinteger(number(4));
        case 0xcf: return Value::uinteger(number(8));
        case 0xd0: return Value::integer(static_cast<int8_t>(number(1)));
        case 0xd1: return Value::integer(static_cast<int16_t>(number(2)));
        case 0xd2: return Value::integer(static_cast<int32_t>(number(4)));
        case 0xd3: return Value::integer(static_cast<int64_t>(number(8)));
        case 0xd9: return Value::str(bytes(number(1)));
        case 0xda: return Value::str(bytes(number(2)));
        case 0xdb: return Value::str(bytes(number(4)));
        case 0xdc: return read_array(number(2), depth);
        case 0xdd: return read_array(number(4), depth);
        case 0xde: return read_map(number(2), depth);
        case 0xdf: return read_map(number(4), depth);
        default: throw DecodeError("unsupported msgpack type byte " + std::to_string(b));
        }
    }

private:
    static constexpr int max_depth = 64;

    const uint8_t* take(uint64_t n) {
        if (n > static_cast<uint64_t>(end_ - p_)) throw DecodeError("msgpack data is truncated");
        const uint8_t* at = p_;
        p_ += n;
        return at;
    }
    uint64_t number(int size) {
        const uint8_t* at = take(size);
        uint64_t u = 0;
        for (int i = 0; i < size; ++i) u = (u << 8) | at[i];
        return u;
    }
    std::string bytes(uint64_t n) {
        const uint8_t* at = take(n);
        return std::string(reinterpret_cast<const char*>(at), n);
    }
    // Every element takes at least one byte: a count beyond what is left is garbage, not a reason
    // to reserve gigabytes.
    void check_count(uint64_t n) {
        if (n > static_cast<uint64_t>(end_ - p_)) throw DecodeError("msgpack data is truncated");
    }
    Value read_array(uint64_t n, int depth) {
        check_count(n);
        Value::Array items;
        items.reserve(n);
        for (uint64_t i = 0; i < n; ++i) items.push_back(read(depth + 1));
        return Value::array(std::move(items));
    }
    Value read_map(uint64_t n, int depth) {
        check_count(n);
        Value::Map entries;
        entries.reserve(n);
        for (uint64_t i = 0; i < n; ++i) {
            Value key = read(depth + 1);
            entries.emplace_back(std::move(key), read(depth + 1));
        }
        return Value::map(std::move(entries));
    }

    const uint8_t* p_;
    const uint8_t* end_;
};

// One whole msgpack value; trailing bytes are an error.
inline Value decode(std::string_view data) {
    Reader reader(data);
    Value v = reader.read();
    if (!reader.at_end()) throw DecodeError("trailing bytes after a msgpack value");
    return v;
}

// The size of the msgpack value that `data` starts with, or 0 while it is cut short (the rest is
// still to come): how a stream of values back to back is split. Only looks at headers, without
// recursion, so a value of any depth costs no stack; ext values count too (decode rejects them
// later, as a bad message). Bytes that are not msgpack throw DecodeError.
inline std::size_t value_size(std::string_view data) {
    const auto* begin = reinterpret_cast<const uint8_t*>(data.data());
    const uint8_t* p = begin;
    const uint8_t* end = begin + data.size();
    auto number = [&](int size, uint64_t& out) {  // false when the header is cut short
        if (end - p < size) return false;
        out = 0;
        for (int i = 0; i < size; ++i) out = (out << 8) | *p++;
        return true;
    };
    uint64_t values = 1;  // still to skip: this one, then the elements of the containers opened so far
    while (values > 0) {
        if (p == end) return 0;
        uint8_t b = *p++;
        --values;
        uint64_t skip = 0;   // payload bytes after the header
        uint64_t n = 0;
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) continue;
        if ((b & 0xf0) == 0x80) values += 2 * uint64_t(b & 0x0f);
        else if ((b & 0xf0) == 0x90) values += b & 0x0f;
        else if ((b & 0xe0) == 0xa0) skip = b & 0x1f;
        else switch (b) {
        case 0xc4: case 0xd9: if (!number(1, skip)) return 0; break;  // bin 8, str 8
        case 0xc5: case 0xda: if (!number(2, skip)) return 0; break;
        case 0xc6: case 0xdb: if (!number(4, skip)) return 0; break;
        case 0xc7: if (!number(1, n)) return 0; skip = n + 1; break;  // ext 8: its type byte, then data
        case 0xc8: if (!number(2, n)) return 0; skip = n + 1; break;
        case 0xc9: if (!number(4, n)) return 0; skip = n + 1; break;
        case 0xca: skip = 4; break;
        case 0xcb: skip = 8; break;
        case 0xcc: case 0xd0: skip = 1; break;
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xce: case 0xd2: skip = 4; break;
        case 0xcf: case 0xd3: skip = 8; break;
        case 0xd4: skip = 2; break;  // fixext 1: type byte and data
        case 0xd5: skip = 3; break;
        case 0xd6: skip = 5; break;
        case 0xd7: skip = 9; break;
        case 0xd8: skip = 17; break;
        case 0xdc: if (!number(2, n)) return 0; values += n; break;
        case 0xdd: if (!number(4, n)) return 0; values += n; break;
        case 0xde: if (!number(2, n)) return 0; values += 2 * n; break;
        case 0xdf: if (!number(4, n)) return 0; values += 2 * n; break;
        default: throw DecodeError("byte " + std::to_string(b) + " does not start a msgpack value");  // 0xc1
        }
        if (skip > static_cast<uint64_t>(end - p)) return 0;
        p += skip;
    }
    return static_cast<std::size_t>(p - begin);
}

inline std::string encode(const Value& v) {
    std::string out;
    Writer(out).value(v);
    return out;
}

}  // namespace cocaine::msgpack

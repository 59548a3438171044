// A msgpack value, as a C++ handler sees the driver's metadata (`request.meta()`).
//
// Part of the cocaine C++ SDK (docs/cpp.md). Header-only; the worker host and the app share this
// layout, which is why changing it means bumping cocaine::abi_version in app.hpp.
#pragma once

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cocaine {

class Value {
public:
    enum class Type { nil, boolean, integer, float32, float64, str, bin, array, map };
    using Array = std::vector<Value>;
    using Map = std::vector<std::pair<Value, Value>>;  // in wire order; keys are usually str

    Value() = default;  // nil

    static Value boolean(bool b) { Value v(Type::boolean); v.bits_ = b; return v; }
    static Value integer(int64_t i) {
        Value v(Type::integer);
        v.negative_ = i < 0;
        v.bits_ = static_cast<uint64_t>(i);
        return v;
    }
    static Value uinteger(uint64_t u) { Value v(Type::integer); v.bits_ = u; return v; }
    static Value float64(double d) { Value v(Type::float64); v.float_ = d; return v; }
    static Value float32(float f) { Value v(Type::float32); v.float_ = f; return v; }
    static Value str(std::string s) { Value v(Type::str); v.bytes_ = std::move(s); return v; }
    static Value bin(std::string s) { Value v(Type::bin); v.bytes_ = std::move(s); return v; }
    static Value array(Array a) { Value v(Type::array); v.array_ = std::move(a); return v; }
    static Value map(Map m) { Value v(Type::map); v.map_ = std::move(m); return v; }

    Type type() const { return type_; }
    bool is_nil() const { return type_ == Type::nil; }
    bool is_number() const { return type_ == Type::integer || type_ == Type::float32 || type_ == Type::float64; }
    bool is_negative() const { return type_ == Type::integer && negative_; }

    bool as_bool() const { expect(Type::boolean, "a boolean"); return bits_ != 0; }
    int64_t as_int() const {
        expect(Type::integer, "an integer");
        if (!negative_ && bits_ > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
            throw std::out_of_range("cocaine::Value: integer too large for int64_t");
        return static_cast<int64_t>(bits_);
    }
    uint64_t as_uint() const {
        expect(Type::integer, "an integer");
        if (negative_) throw std::out_of_range("cocaine::Value: negative integer read as unsigned");
        return bits_;
    }
    // A number of any kind, as a double.
    double as_double() const {
        if (type_ == Type::float32 || type_ == Type::float64) return float_;
        expect(Type::integer, "a number");
        return negative_ ? static_cast<double>(static_cast<int64_t>(bits_)) : static_cast<double>(bits_);
    }
    // The bytes of a str or a bin.
    const std::string& as_string() const {
        if (type_ != Type::str) expect(Type::bin, "a string");
        return bytes_;
    }
    const Array& as_array() const { expect(Type::array, "an array"); return array_; }
    const Map& as_map() const { expect(Type::map, "a map"); return map_; }

    // The value under the str key `key` of a map; nullptr when absent or when this is not a map.
    const Value* find(std::string_view key) const {
        if (type_ != Type::map) return nullptr;
        for (const auto& [k, v] : map_)
            if (k.type_ == Type::str && k.bytes_ == key) return &v;
        return nullptr;
    }

private:
    explicit Value(Type type) : type_(type) {}
    void expect(Type type, const char* what) const {
        if (type_ != type) throw std::invalid_argument(std::string("cocaine::Value: not ") + what);
    }

    Type type_ = Type::nil;
    bool negative_ = false;  // integer: bits_ holds an int64_t
    uint64_t bits_ = 0;      // boolean, integer
    double float_ = 0;       // float32, float64
    std::string bytes_;      // str, bin
    Array array_;
    Map map_;
};

}  // namespace cocaine

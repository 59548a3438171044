// Test driver for the C++ SDK's msgpack codec (tests/test_cpp_apps.py): reads one hex-encoded
// msgpack value per line, decodes it and encodes it again, and prints the hex of the result, or
// "error: <reason>" when the input is not valid msgpack.
#include <cocaine/msgpack.hpp>

#include <iostream>
#include <string>

static std::string from_hex(const std::string& hex) {
    std::string bytes;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    return bytes;
}

static std::string to_hex(const std::string& bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string hex;
    for (unsigned char c : bytes) {
        hex.push_back(digits[c >> 4]);
        hex.push_back(digits[c & 15]);
    }
    return hex;
}

int main() {
    std::string line;
    while (std::getline(std::cin, line)) {
        try {
            std::cout << to_hex(cocaine::msgpack::encode(cocaine::msgpack::decode(from_hex(line)))) << "\n";
        } catch (const cocaine::msgpack::DecodeError& e) {
            std::cout << "error: " << e.what() << "\n";
        }
    }
}

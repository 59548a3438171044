// Test driver for the C++ SDK's msgpack codec (tests/test_cpp_apps.py): reads one hex-encoded
// msgpack value per line, decodes it and encodes it again, and prints the hex of the result, or
// "error: <reason>" when the input is not valid msgpack. With the argument "sizes" it prints what
// value_size says of each line instead: the size of the value it starts with, 0 while that value
// is cut short, or "error: <reason>".
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

int main(int argc, char** argv) {
    bool sizes = argc > 1 && std::string(argv[1]) == "sizes";
    std::string line;
    while (std::getline(std::cin, line)) {
        try {
            if (sizes) std::cout << cocaine::msgpack::value_size(from_hex(line)) << "\n";
            else std::cout << to_hex(cocaine::msgpack::encode(cocaine::msgpack::decode(from_hex(line)))) << "\n";
        } catch (const cocaine::msgpack::DecodeError& e) {
            std::cout << "error: " << e.what() << "\n";
        }
    }
}

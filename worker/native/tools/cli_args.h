// Command-line walking for the benchmark tools: `--name value` pairs and bare switches, with a number that does not
// parse or a missing value reported as the option's error (exit status 2) instead of an uncaught std::stoi exception.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace ms_tools {

class CliArgs {
  public:
    CliArgs(int argc, char **argv) : argc_(argc), argv_(argv) {}

    // Advances to the next argument; false after the last one. name() is then that argument.
    bool next() { return ++i_ < argc_; }
    std::string name() const { return argv_[i_]; }

    // The value of the current option (the following argument), consumed.
    std::string value() {
        if (i_ + 1 >= argc_) fail("needs a value");
        return argv_[++i_];
    }
    int int_value() { return parse([](const std::string &s, size_t *n) { return std::stoi(s, n); }); }
    unsigned long long u64_value() { return parse([](const std::string &s, size_t *n) { return std::stoull(s, n); }); }
    double double_value() { return parse([](const std::string &s, size_t *n) { return std::stod(s, n); }); }

    [[noreturn]] void fail(const char *what) const {
        std::fprintf(stderr, "%s: %s\n", argv_[i_], what);
        std::exit(2);
    }

  private:
    template <class F> auto parse(F f) -> decltype(f(std::string(), nullptr)) {
        const char *opt = argv_[i_];
        const std::string s = value();
        try {
            size_t used = 0;
            auto v = f(s, &used);
            if (used == s.size()) return v;
        } catch (const std::logic_error &) {
        }
        std::fprintf(stderr, "%s: \"%s\" is not a number\n", opt, s.c_str());
        std::exit(2);
    }

    int argc_;
    char **argv_;
    int i_ = 0;
};

}  // namespace ms_tools

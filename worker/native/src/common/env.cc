#include "common/env.h"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <string>

#include "common/error.h"

namespace ms {

namespace {

[[noreturn]] void bad_value(const char *name, const char *value, const std::string &expected) {
    throw Error(MS_ERR_INVALID_ARGUMENT, std::string(name) + " must be " + expected + ", got \"" + value + "\"");
}

std::string lower(const char *s) {
    std::string out(s);
    for (char &c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

}  // namespace

bool env_switch(const char *name, bool fallback) {
    const char *v = std::getenv(name);
    if (!v || !*v) return fallback;
    const std::string s = lower(v);
    if (s == "1" || s == "true" || s == "on" || s == "yes") return true;
    if (s == "0" || s == "false" || s == "off" || s == "no") return false;
    bad_value(name, v, "1 or 0 (true/false, on/off, yes/no)");
}

long env_long(const char *name, long fallback, long lo, long hi) {
    const char *v = std::getenv(name);
    if (!v || !*v) return fallback;
    char *end = nullptr;
    errno = 0;
    const long n = std::strtol(v, &end, 10);
    if (end == v || *end != '\0' || errno == ERANGE || n < lo || n > hi)
        bad_value(name, v, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return n;
}

int env_choice(const char *name, int fallback, std::initializer_list<int> allowed) {
    const char *v = std::getenv(name);
    if (!v || !*v) return fallback;
    char *end = nullptr;
    errno = 0;
    const long n = std::strtol(v, &end, 10);
    if (end != v && *end == '\0' && errno == 0)
        for (int a : allowed)
            if (n == a) return a;
    std::string list;
    for (int a : allowed) list += (list.empty() ? "" : ", ") + std::to_string(a);
    bad_value(name, v, "one of " + list);
}

}  // namespace ms

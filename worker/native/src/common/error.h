// Errors inside the core: a C++ exception carrying an ms_status and a message. C API entry points catch it, store
// the message for ms_last_error() and return the status; nothing throws across the C boundary.
#pragma once

#include <stdexcept>
#include <string>

#include "engine.h"

namespace ms {

class Error : public std::runtime_error {
  public:
    Error(ms_status status, const std::string &message) : std::runtime_error(message), status_(status) {}
    ms_status status() const { return status_; }

  private:
    ms_status status_;
};

// Records `message` as this thread's last error and returns `status` (for C API entry points).
ms_status set_last_error(ms_status status, const std::string &message);
void clear_last_error();

// Runs `fn` and converts any exception into a status + last error. Use at every C API entry point.
template <typename Fn> ms_status guard(Fn &&fn) {
    try {
        clear_last_error();
        fn();
        return MS_OK;
    } catch (const Error &e) {
        return set_last_error(e.status(), e.what());
    } catch (const std::bad_alloc &) {
        return set_last_error(MS_ERR_OUT_OF_MEMORY, "out of memory");
    } catch (const std::exception &e) {
        return set_last_error(MS_ERR_INTERNAL, e.what());
    }
}

}  // namespace ms

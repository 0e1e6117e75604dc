#include "common/error.h"

namespace ms {
thread_local std::string g_last_error;

ms_status set_last_error(ms_status status, const std::string &message) {
    g_last_error = message;
    return status;
}

void clear_last_error() { g_last_error.clear(); }

}  // namespace ms

extern "C" const char *ms_last_error(void) { return ms::g_last_error.c_str(); }

extern "C" const char *ms_status_name(ms_status status) {
    switch (status) {
    case MS_OK: return "MS_OK";
    case MS_ERR_INVALID_ARGUMENT: return "MS_ERR_INVALID_ARGUMENT";
    case MS_ERR_IO: return "MS_ERR_IO";
    case MS_ERR_FORMAT: return "MS_ERR_FORMAT";
    case MS_ERR_UNSUPPORTED: return "MS_ERR_UNSUPPORTED";
    case MS_ERR_OUT_OF_MEMORY: return "MS_ERR_OUT_OF_MEMORY";
    case MS_ERR_NOT_FOUND: return "MS_ERR_NOT_FOUND";
    case MS_ERR_CAPACITY: return "MS_ERR_CAPACITY";
    case MS_ERR_CLOSED: return "MS_ERR_CLOSED";
    case MS_ERR_INTERNAL: return "MS_ERR_INTERNAL";
    }
    return "MS_ERR_UNKNOWN";
}

// libFuzzer target: arbitrary bytes as a GGUF file image. Parsing must either succeed with every tensor's data inside
// the buffer, or throw ms::Error; anything else (a crash, a sanitizer report, another exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/error.h"
#include "gguf/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    try {
        const ms::gguf::Contents c = ms::gguf::parse(data, size, "fuzz.gguf");
        for (const auto &t : c.tensors) {
            if (t.data < data || t.data + t.nbytes > data + size) std::abort();
            volatile uint8_t sink = t.nbytes ? t.data[t.nbytes - 1] : 0;  // touch the last byte: ASan checks it
            (void)sink;
        }
    } catch (const ms::Error &) {
    }
    return 0;
}

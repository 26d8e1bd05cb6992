// Change tokens as clients hand them back (changes --since, diff): a token
// decode_token accepts must be the very text encode_token makes of its
// fields, so that no two texts name one checkpoint. parse_uuid (disk ids,
// which tokens bind) gets the same input.
#include "check.hh"

#include "tracking/token.hh"

#include <cctype>

using namespace rct::tracking;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    const std::string_view in = rct::fuzz::text(data, size);
    if (const auto t = decode_token(in)) {
        RCT_FUZZ_CHECK(encode_token(*t) == in);
    }
    if (parse_uuid(in)) {
        std::size_t digits = 0;
        for (const char c : in) {
            digits += std::isxdigit(static_cast<unsigned char>(c)) != 0;
        }
        RCT_FUZZ_CHECK(digits == 32);
    }
    return 0;
}

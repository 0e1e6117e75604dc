// The JSON reader used for config.json, safetensors headers and shard indexes.
#include <gtest/gtest.h>

#include <string>

#include "common/error.h"
#include "io/json.h"

namespace {

std::string error_of(const std::string &text) {
    try {
        ms::Json::parse(text, "doc.json");
    } catch (const ms::Error &e) {
        EXPECT_EQ(e.status(), MS_ERR_FORMAT);
        return e.what();
    }
    return "";
}

TEST(Json, ParsesValues) {
    ms::Json j = ms::Json::parse(R"({"a": [1, -2.5e3, true, false, null], "s": "x\"\\\/\n\u00e9\ud83d\ude00", "o": {}})", "t");
    ASSERT_TRUE(j.is_object());
    const auto &a = j.find("a")->items();
    ASSERT_EQ(a.size(), 5u);
    EXPECT_EQ(a[0].as_number(), 1);
    EXPECT_TRUE(a[0].is_integer());
    EXPECT_EQ(a[1].as_number(), -2500);
    EXPECT_TRUE(a[2].as_bool());
    EXPECT_FALSE(a[3].as_bool());
    EXPECT_TRUE(a[4].is_null());
    EXPECT_EQ(j.find("s")->as_string(), "x\"\\/\n\xc3\xa9\xf0\x9f\x98\x80");
    EXPECT_TRUE(j.find("o")->is_object());
    EXPECT_EQ(j.find("missing"), nullptr);
    EXPECT_EQ(j.members()[0].first, "a");  // document order
    EXPECT_FALSE(ms::Json::parse("1.5", "t").is_integer());
}

TEST(Json, RejectsMalformedInputWithPosition) {
    EXPECT_NE(error_of("{\"a\": }").find("doc.json: invalid JSON at byte 6"), std::string::npos);
    EXPECT_NE(error_of("").find("unexpected end"), std::string::npos);
    EXPECT_NE(error_of("[1, 2").find("unexpected end"), std::string::npos);
    EXPECT_NE(error_of("{\"a\": 1, \"a\": 2}").find("duplicate key"), std::string::npos);
    EXPECT_NE(error_of("\"abc").find("unterminated"), std::string::npos);
    EXPECT_NE(error_of("\"\\ud800\"").find("surrogate"), std::string::npos);
    EXPECT_NE(error_of("01").find("trailing"), std::string::npos);
    EXPECT_NE(error_of("1e999").find("out of range"), std::string::npos);
    EXPECT_NE(error_of("{} x").find("trailing"), std::string::npos);
    EXPECT_NE(error_of("tru").find("expected 'true'"), std::string::npos);
    EXPECT_NE(error_of("\"a\tb\"").find("control character"), std::string::npos);
    EXPECT_NE(error_of(std::string(100, '[') + std::string(100, ']')).find("nesting"), std::string::npos);
}

}  // namespace

// Environment settings: accepted spellings, defaults, and an error naming the variable for anything else.
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <string>

#include "common/env.h"
#include "common/error.h"

namespace {

constexpr const char *kVar = "MS_TEST_ENV_SETTING";

struct EnvSetting : ::testing::Test {
    void TearDown() override { unsetenv(kVar); }
    void set(const char *v) { setenv(kVar, v, 1); }
};

std::string error_of(const std::function<void()> &fn) {
    try {
        fn();
    } catch (const ms::Error &e) {
        EXPECT_EQ(e.status(), MS_ERR_INVALID_ARGUMENT);
        return e.what();
    }
    return "";
}

TEST_F(EnvSetting, SwitchUnsetOrEmptyGivesTheDefault) {
    EXPECT_TRUE(ms::env_switch(kVar, true));
    EXPECT_FALSE(ms::env_switch(kVar, false));
    set("");
    EXPECT_TRUE(ms::env_switch(kVar, true));
    EXPECT_FALSE(ms::env_switch(kVar, false));
}

TEST_F(EnvSetting, SwitchSpellings) {
    for (const char *on : {"1", "true", "TRUE", "on", "Yes"}) {
        set(on);
        EXPECT_TRUE(ms::env_switch(kVar, false)) << on;
    }
    for (const char *off : {"0", "false", "Off", "no"}) {
        set(off);
        EXPECT_FALSE(ms::env_switch(kVar, true)) << off;
    }
}

TEST_F(EnvSetting, SwitchRejectsAnythingElseNamingTheVariable) {
    for (const char *bad : {"2", "enable", " 1", "1 "}) {
        set(bad);
        const std::string msg = error_of([] { ms::env_switch(kVar, true); });
        EXPECT_NE(msg.find(kVar), std::string::npos) << msg;
        EXPECT_NE(msg.find(std::string("\"") + bad + "\""), std::string::npos) << msg;
    }
}

TEST_F(EnvSetting, LongInRangeAndErrors) {
    EXPECT_EQ(ms::env_long(kVar, 7, 1, 10), 7);
    set("10");
    EXPECT_EQ(ms::env_long(kVar, 7, 1, 10), 10);
    for (const char *bad : {"11", "0", "4x", "x", "99999999999999999999"}) {
        set(bad);
        const std::string msg = error_of([] { ms::env_long(kVar, 7, 1, 10); });
        EXPECT_NE(msg.find("[1, 10]"), std::string::npos) << bad << ": " << msg;
    }
}

TEST_F(EnvSetting, ChoiceAcceptsOnlyTheListedValues) {
    EXPECT_EQ(ms::env_choice(kVar, 8, {4, 8}), 8);
    set("4");
    EXPECT_EQ(ms::env_choice(kVar, 8, {4, 8}), 4);
    set("6");
    const std::string msg = error_of([] { ms::env_choice(kVar, 8, {4, 8}); });
    EXPECT_NE(msg.find("one of 4, 8"), std::string::npos) << msg;
}

}  // namespace

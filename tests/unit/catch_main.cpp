// Catch2 v2 main for the unit test executables.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

// The ABI is header-only; this file exists so SwiftPM builds the target and checks the
// _Static_asserts in the header with a C compiler.
#include "npa_plugin_abi.h"

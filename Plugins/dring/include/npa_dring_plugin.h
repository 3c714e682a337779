/* The npa-dring vendor plugin's entry point, under the name it has when linked into a test
 * binary (as an injected image it exports npa_plugin_main like every plugin). */
#include "npa_plugin_abi.h"
int32_t npa_dring_plugin_main(npa_plugin_ops *ops);

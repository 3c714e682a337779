#include "vmxnet3_mirror.h"

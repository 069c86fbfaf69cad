/* SPDX-License-Identifier: MIT */
/* placeholder: being written */
#include "util.h"

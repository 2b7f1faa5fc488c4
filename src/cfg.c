#include "config.h"
/* placeholder until the module lands */
int cfg_placeholder_(void);
int cfg_placeholder_(void) { return 0; }

#include "config.h"
/* placeholder until the module lands */
int hsm_placeholder_(void);
int hsm_placeholder_(void) { return 0; }

#include "config.h"
/* placeholder until the module lands */
int xks_placeholder_(void);
int xks_placeholder_(void) { return 0; }

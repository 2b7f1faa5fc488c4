#include "config.h"
/* placeholder until the module lands */
int route_placeholder_(void);
int route_placeholder_(void) { return 0; }

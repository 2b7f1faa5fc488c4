#include "config.h"
/* placeholder until the module lands */
int health_placeholder_(void);
int health_placeholder_(void) { return 0; }

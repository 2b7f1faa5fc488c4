#include "config.h"
/* placeholder until the module lands */
int b64_placeholder_(void);
int b64_placeholder_(void) { return 0; }

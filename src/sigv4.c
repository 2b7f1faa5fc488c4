#include "config.h"
/* placeholder until the module lands */
int sigv4_placeholder_(void);
int sigv4_placeholder_(void) { return 0; }

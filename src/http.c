#include "config.h"
/* placeholder until the module lands */
int http_placeholder_(void);
int http_placeholder_(void) { return 0; }

#include "config.h"
/* placeholder until the module lands */
int server_placeholder_(void);
int server_placeholder_(void) { return 0; }

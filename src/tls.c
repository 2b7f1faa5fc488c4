#include "config.h"
/* placeholder until the module lands */
int tls_placeholder_(void);
int tls_placeholder_(void) { return 0; }

#ifndef XKS_TLS_H
#define XKS_TLS_H
#endif

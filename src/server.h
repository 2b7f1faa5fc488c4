#ifndef XKS_SERVER_H
#define XKS_SERVER_H
#endif

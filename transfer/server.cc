#include "transfer/server.h"

#include "transfer/client.h"

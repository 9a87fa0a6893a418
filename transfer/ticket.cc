#include "transfer/ticket.h"

// Frees an error string a shim call wrote (see shim.h).

#include <cstdlib>

extern "C" void lote_shim_free_error(char* error) { std::free(error); }

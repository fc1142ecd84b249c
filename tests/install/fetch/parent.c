/* parent.c -- code of a parent project that sfa's own flags would break: an
** unused variable (-Wall -Werror) and a check that no feature macro leaked. */
#if defined(_POSIX_C_SOURCE) || defined(_DEFAULT_SOURCE)
#error "sfa's feature macros reached the parent project"
#endif
int main(void) {
  int unused;
  return 0;
}

// For crash hunts on the GPU machine (benchmarks/diag/gpu_tests.sh): preloaded into a Python process
// (gcc -shared -fPIC -o libsegv_bt.so segv_bt.c; LD_PRELOAD=./libsegv_bt.so python3 ...), on SIGSEGV or SIGBUS it
// prints the native stack to stderr after Python's faulthandler (which passes the signal on to the handler it
// replaced: this one), then dies of the signal.
#define _GNU_SOURCE
#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
static int out = 2;  // stderr as it was at start-up (pytest later points fd 2 at a capture file)
static void on_fault(int sig, siginfo_t* si, void* uc) {
  (void)uc;
  char msg[128];
  int n = 0;
  const char* head = "\n=== native backtrace (segv_bt), fault address ";
  write(out, head, strlen(head));
  unsigned long a = (unsigned long)si->si_addr;
  char hex[20]; int k = 0; do { int d = a & 15; hex[k++] = d < 10 ? '0' + d : 'a' + d - 10; a >>= 4; } while (a);
  msg[n++] = '0'; msg[n++] = 'x'; while (k) msg[n++] = hex[--k]; msg[n++] = '\n';
  write(out, msg, n);
  void* frames[48];  // the innermost ones: the native side of the fault (the rest is the interpreter)
  int depth = backtrace(frames, 48);
  backtrace_symbols_fd(frames, depth, out);
  signal(sig, SIG_DFL);
  raise(sig);
}
__attribute__((constructor)) static void install(void) {
  const int d = dup(2);
  if (d >= 0) out = d;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigaction(SIGSEGV, &sa, 0);
  sigaction(SIGBUS, &sa, 0);
}

/* HTTP client of the kernel-matrix VM (tests/kernels/init.sh): busybox's static wget resolves
 * names through glibc's NSS, which a static binary cannot load there, and drops the body of
 * non-2xx answers (a 503's reason).
 *
 *   http_get PORT PATH OUT
 *
 * GETs http://127.0.0.1:PORT/PATH (HTTP/1.0), writes the body (de-chunked) to OUT and prints the
 * status line. Exits 0 when an answer arrived (whatever its status), 1 otherwise. Reads time out
 * after 120 s. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static char *buf;
static size_t len, cap;

static void append(const char *p, size_t n) {
  if (len + n + 1 > cap) {
    cap = (len + n + 1) * 2;
    buf = realloc(buf, cap);
    if (!buf) exit(1);
  }
  memcpy(buf + len, p, n);
  len += n;
  buf[len] = 0;
}

/* Writes a chunked body [p, end) to f. Returns 0 on success. */
static int write_chunked(const char *p, const char *end, FILE *f) {
  while (p < end) {
    char *next;
    unsigned long n = strtoul(p, &next, 16);
    const char *data = strstr(next, "\r\n");
    if (!data) return -1;
    data += 2;
    if (n == 0) return 0;
    if ((size_t)(end - data) < n) return -1;
    fwrite(data, 1, n, f);
    p = data + n + 2;
  }
  return -1;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: http_get PORT PATH OUT\n");
    return 2;
  }
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  struct timeval tv = {.tv_sec = 120};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    printf("failed: connect: %m\n");
    return 1;
  }
  char req[1024];
  int n = snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", argv[2]);
  if (write(fd, req, n) != n) {
    printf("failed: write: %m\n");
    return 1;
  }
  char chunk[65536];
  ssize_t r;
  while ((r = read(fd, chunk, sizeof(chunk))) > 0) append(chunk, r);
  if (r < 0) {
    printf("failed: read: %m\n");
    return 1;
  }
  char *body = buf ? strstr(buf, "\r\n\r\n") : NULL;
  if (!body) {
    printf("failed: no HTTP answer (%zu bytes)\n", len);
    return 1;
  }
  *body = 0;
  body += 4;
  FILE *f = fopen(argv[3], "wb");
  if (!f) {
    printf("failed: %s: %m\n", argv[3]);
    return 1;
  }
  int chunked = 0;
  for (char *h = strstr(buf, "\r\n"); h; h = strstr(h + 2, "\r\n")) {
    const char *line = h + 2, *eol = strstr(line, "\r\n");
    size_t l = eol ? (size_t)(eol - line) : strlen(line);
    if (l >= 18 && strncasecmp(line, "transfer-encoding:", 18) == 0 && memmem(line, l, "chunked", 7))
      chunked = 1;
  }
  if (chunked ? write_chunked(body, buf + len, f) != 0
              : fwrite(body, 1, buf + len - body, f) != (size_t)(buf + len - body)) {
    printf("failed: bad body\n");
    return 1;
  }
  fclose(f);
  *strchrnul(buf, '\r') = 0;
  printf("%s\n", buf);
  return 0;
}

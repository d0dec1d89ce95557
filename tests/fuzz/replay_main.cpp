// Replays fuzz inputs through a target without libFuzzer (builds with any compiler): every
// file named on the command line, or found directly in a directory named there, is passed to
// LLVMFuzzerTestOneInput once. ctest runs it over the committed corpus (fuzz.*.replay), so
// every input that once found a bug stays a regression test in the normal build.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static int run_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "replay: cannot read %s\n", path.c_str());
    return 1;
  }
  std::vector<uint8_t> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(buf.data(), buf.size());
  return 0;
}

int main(int argc, char **argv) {
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  int inputs = 0, errors = 0;
  for (int i = 1; i < argc; i++) {
    struct stat st {};
    if (stat(argv[i], &st) != 0) {
      std::fprintf(stderr, "replay: %s: not found\n", argv[i]);
      errors++;
      continue;
    }
    std::vector<std::string> files;
    if (S_ISDIR(st.st_mode)) {
      if (DIR *d = opendir(argv[i])) {
        while (dirent *e = readdir(d))
          if (e->d_name[0] != '.') files.push_back(std::string(argv[i]) + "/" + e->d_name);
        closedir(d);
      }
      std::sort(files.begin(), files.end());
    } else {
      files.push_back(argv[i]);
    }
    for (const auto &f : files) {
      errors += run_file(f);
      inputs++;
    }
  }
  std::printf("replay: %d inputs, %d unreadable\n", inputs, errors);
  return (errors || inputs == 0) ? 1 : 0;
}

// Package djtest runs DataJoint for Python in tests: the real DataJoint 2.x, imported from
// the source snapshot beside the repository (../shared/vendor/datajoint-python, or
// JETJOBS_TEST_DATAJOINT_SRC) with its dependencies from Debian's packages
// (.ci/datajoint-packages), and the repository's own Python package (python/).
//
// Tests that need it fail, saying what to install, when DataJoint cannot be imported; they
// never skip. They run with `make test-datajoint` (build tag datajoint).
package djtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// EnvSource names a DataJoint source tree (its src/ directory or the repository) to test with.
const EnvSource = "JETJOBS_TEST_DATAJOINT_SRC"

// Root is the repository's root directory: the nearest directory above the working directory
// with a go.mod.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("djtest: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Env is the environment of a Python process that imports DataJoint and the repository's
// jetjobs package, connected to the server of serverDSN as DataJoint connects (DJ_HOST,
// DJ_PORT, DJ_USER, DJ_PASS). extraPath is put at the front of PYTHONPATH (a directory with a
// pipeline module); DataJoint's own log stream is left as it is (stdout), as a user has it.
func Env(t testing.TB, serverDSN string, extraPath ...string) []string {
	t.Helper()
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	return DataJointEnv(t, serverDSN, append(extraPath, filepath.Join(root, "python"))...)
}

// DataJointEnv is Env without the repository's jetjobs package: for a Python that has it
// installed.
func DataJointEnv(t testing.TB, serverDSN string, extraPath ...string) []string {
	t.Helper()
	paths, err := pythonPath()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := mysql.ParseDSN(serverDSN)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(cfg.Addr, ":")
	if port == "" {
		port = "3306"
	}
	return []string{
		"PYTHONPATH=" + strings.Join(append(extraPath, paths...), string(os.PathListSeparator)),
		"DJ_HOST=" + host, "DJ_PORT=" + port, "DJ_USER=" + cfg.User, "DJ_PASS=" + cfg.Passwd,
		// DataJoint warns that MariaDB is not officially supported.
		"PYTHONWARNINGS=ignore::UserWarning",
	}
}

var (
	pathOnce sync.Once
	pathList []string
	pathErr  error
)

// pythonPath is DataJoint's source, the interpreter's own site-packages (before Debian's,
// whose older copies must not shadow them), and Debian's.
func pythonPath() ([]string, error) {
	pathOnce.Do(func() {
		root, err := Root()
		if err != nil {
			pathErr = err
			return
		}
		src := os.Getenv(EnvSource)
		if src == "" {
			src = filepath.Join(root, "..", "shared", "vendor", "datajoint-python")
		}
		if st, err := os.Stat(filepath.Join(src, "src", "datajoint")); err == nil && st.IsDir() {
			src = filepath.Join(src, "src")
		}
		out, err := exec.Command("python3", "-c", `import site; print("\n".join(site.getsitepackages()))`).Output()
		if err != nil {
			pathErr = fmt.Errorf("djtest: python3 does not run (%v): install Python 3.9 or later", err)
			return
		}
		pathList = append([]string{src}, strings.Fields(string(out))...)
		pathList = append(pathList, "/usr/lib/python3/dist-packages")
	})
	return pathList, pathErr
}

// Require fails t, saying what to install, unless DataJoint imports and connects with env.
func Require(t testing.TB, env []string) {
	t.Helper()
	out, err := Python(t, "", env, "import datajoint as dj, jetjobs; dj.conn()")
	if err != nil {
		t.Fatalf("DataJoint for Python cannot be used: %v\n%s\n%s", err, out, installHint())
	}
}

// installHint says how to make DataJoint importable.
func installHint() string {
	pkgs := "the packages listed in .ci/datajoint-packages"
	if root, err := Root(); err == nil {
		if data, err := os.ReadFile(filepath.Join(root, ".ci", "datajoint-packages")); err == nil {
			var names []string
			for _, line := range strings.Split(string(data), "\n") {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
					names = append(names, line)
				}
			}
			pkgs = strings.Join(names, " ")
		}
	}
	return "These tests need DataJoint 2.x for Python: its source in ../shared/vendor/datajoint-python " +
		"(or " + EnvSource + "=<datajoint-python checkout>, or datajoint installed with pip), and its dependencies: " +
		"apt-get update && apt-get install -y " + pkgs + " (.ci/run installs them)."
}

// Python runs a Python program (source code, with args in sys.argv[1:]) in dir with env added
// to the process's, and returns what it wrote on stdout and stderr together.
func Python(t testing.TB, dir string, env []string, source string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("python3", append([]string{"-c", source}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// EnvBenchKeys sets the keys of the handler and DataJoint benchmarks (default 2,000): a few
// for a quick check that they run.
const EnvBenchKeys = "JETJOBS_BENCH_KEYS"

// BenchKeys is the number of keys the benchmarks compute.
func BenchKeys(b testing.TB) int {
	s := os.Getenv(EnvBenchKeys)
	if s == "" {
		return 2000
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number of keys", EnvBenchKeys, s)
	}
	return n
}

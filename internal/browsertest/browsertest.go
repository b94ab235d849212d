// Package browsertest starts headless Chromium for tests and tools that drive the web console
// with chromedp: Debian's chromium package (apt-get install chromium chromium-driver; .ci/run
// installs them), started with a fresh profile and without background traffic.
//
// A test that needs a browser fails, saying how to install one, when none is found; it never
// skips.
package browsertest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// EnvChromium names the browser binary to use instead of looking for one on PATH.
const EnvChromium = "JETJOBS_TEST_CHROMIUM"

// InstallHint says how to get a browser.
const InstallHint = "install Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver; .ci/run does it), " +
	"or set " + EnvChromium + " to a Chromium or Chrome binary"

// Path returns the browser binary: $JETJOBS_TEST_CHROMIUM, else chromium, chromium-browser,
// google-chrome or chrome on PATH.
func Path() (string, error) {
	if p := os.Getenv(EnvChromium); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", errors.New("browsertest: " + EnvChromium + "=" + p + ": " + err.Error() + ": " + InstallHint)
		}
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("browsertest: no Chromium found on PATH: " + InstallHint)
}

// Start starts headless Chromium with its profile in userDataDir (a fresh, empty directory)
// and returns a chromedp context of its first tab; cancel closes the browser.
func Start(ctx context.Context, userDataDir string, width, height int) (context.Context, context.CancelFunc, error) {
	path, err := Path()
	if err != nil {
		return nil, nil, err
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(userDataDir),
		chromedp.WindowSize(width, height),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	// Start the browser now (the first action does), so that a browser that cannot start fails
	// here, with its reason, rather than inside a test's first step.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(bctx, chromedp.Navigate("about:blank")) }()
	select {
	case err = <-started:
	case <-time.After(60 * time.Second):
		err = errors.New("did not start within 60 s")
	}
	if err != nil {
		cancelBrowser()
		cancelAlloc()
		return nil, nil, errors.New("browsertest: start " + path + ": " + err.Error() + " (" + InstallHint + ")")
	}
	return bctx, func() { cancelBrowser(); cancelAlloc() }, nil
}

// New starts a browser for t (a 1280×900 window, its profile in t.TempDir()) and closes it
// when t ends. It fails t when no browser is installed.
func New(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel, err := Start(context.Background(), t.TempDir(), 1280, 900)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cancel)
	return ctx
}

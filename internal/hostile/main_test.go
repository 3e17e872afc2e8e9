package hostile

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	CleanupBinary() // the rxfer binary the tests shared
	os.Exit(code)
}

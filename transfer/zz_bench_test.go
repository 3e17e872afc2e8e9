package transfer

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestXBench(t *testing.T) {
	p := newPair(t, Hooks{})
	p.src.cfg.ChunkSize = 8 << 20
	src := filepath.Join(p.srcDir, "f")
	b := make([]byte, 1<<30)
	os.WriteFile(src, b, 0o644)
	for i := 0; i < 3; i++ {
		info, err := p.src.Push(context.Background(), PushRequest{SourcePath: "f", DestPath: "g", Overwrite: true}, p.dst.LocalPeer(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%.2fs %.0f MB/s", info.Result.Duration.Seconds(), float64(info.BytesTotal)/info.Result.Duration.Seconds()/1e6)
	}
}

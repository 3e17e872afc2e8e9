package transfer

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/rxfer/rxfer/fallback"
)

// --data-encryption end to end in one process (loopback: auto means off):
// "on" for a copy encrypts it; a destination set to "on" gets encryption from
// a source set to "off"; a destination that offers none refuses "on" clearly.
func TestDataEncryptionPolicy(t *testing.T) {
	want := "tls"
	if ok, _ := fallback.KTLS(); ok {
		want = "ktls"
	}
	for _, tc := range []struct {
		name     string
		dst      DataEncryption
		copy     DataEncryption
		wantEnc  string
		wantFail error
	}{
		{"auto on loopback", EncryptAuto, EncryptDefault, "off", nil},
		{"copy asks for it", EncryptAuto, EncryptOn, want, nil},
		{"destination requires it", EncryptOn, EncryptOff, want, nil},
		{"destination offers none", EncryptOff, EncryptOn, "", ErrTransportUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPair(t, testKnobs{}, func(c *Config) { c.RDMA.Disabled = true; c.DataEncryption = tc.dst })
			if tc.dst == EncryptOff { // as serve does: the listener offers no TLS
				data, err := fallback.ListenConfig{NoTLS: true}.Listen("127.0.0.1:0", nil)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { data.Close() })
				p.dst = NewNode(Config{ID: "dst", Root: p.dstRoot, Data: data, Logger: p.dst.log, RDMA: RDMAConfig{Disabled: true}, DataEncryption: EncryptOff})
			}
			src := writeRandom(t, filepath.Join(p.srcDir, "f"), 3<<16+5)
			info, err := p.src.Push(t.Context(), PushRequest{SourcePath: "/f", DestPath: "/g", DataEncryption: tc.copy}, p.dst.LocalPeer(), nil)
			if tc.wantFail != nil {
				if !errors.Is(err, tc.wantFail) {
					t.Fatalf("push: %v, want %v", err, tc.wantFail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(filepath.Join(p.dstDir, "g")); !bytes.Equal(got, src) {
				t.Fatal("destination differs")
			}
			in, _ := p.dst.Get(info.ID)
			if info.DataEncryption != tc.wantEnc || in.DataEncryption != tc.wantEnc {
				t.Fatalf("data encryption: source %q, destination %q, want %q", info.DataEncryption, in.DataEncryption, tc.wantEnc)
			}
		})
	}
}

package fallback

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/internal/crc32c"
	"github.com/rxfer/rxfer/internal/extenttest"
)

// BenchmarkSingleFile is the single-file path over loopback (64 MiB in
// 8 MiB chunks, two streams): run it before and after a change to the
// data path to see that plain sinks and sources did not slow down.
//
//	nice -n 19 go test -run '^$' -bench SingleFile -count 5 ./fallback
func BenchmarkSingleFile(b *testing.B) {
	const size, chunkSize = 64 << 20, 8 << 20
	dir := b.TempDir()
	data := make([]byte, size)
	rand.Read(data)
	src := benchFile(b, filepath.Join(dir, "src"), data)
	dst := benchFile(b, filepath.Join(dir, "dst"), make([]byte, size))
	var chunks []chunk.Chunk
	for off := 0; off < size; off += chunkSize {
		chunks = append(chunks, chunk.Chunk{Index: uint32(len(chunks)), Offset: int64(off), Length: chunkSize, CRC: crc32c.Checksum(data[off : off+chunkSize])})
	}
	l, err := Listen("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	for _, mode := range []SendMode{SendFile, ReadWrite} {
		b.Run(mode.String(), func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				// A fresh sink per run: a verified chunk is final.
				sink := &benchSink{f: dst, size: size}
				tok, _ := NewToken()
				release := l.Expect(tok, sink)
				if err := benchSend(b, l, tok, src, chunks, SendOptions{Streams: 2, Mode: mode}); err != nil {
					b.Fatal(err)
				}
				release()
			}
		})
	}
}

// benchSink admits every chunk at its source offset.
type benchSink struct {
	f    *os.File
	size int64
}

func (s *benchSink) File() *os.File { return s.f }
func (s *benchSink) Admit(c chunk.Chunk) (int64, error) {
	if c.Offset+int64(c.Length) > s.size {
		return 0, fmt.Errorf("chunk %d beyond the end", c.Index)
	}
	return c.Offset, nil
}
func (s *benchSink) Landed(chunk.Chunk, error) {}

// benchFile writes data to name and returns it opened read-write.
func benchFile(b *testing.B, name string, data []byte) *os.File {
	b.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// benchSend sends chunks once and fails on any verdict but nil.
func benchSend(b *testing.B, l *Listener, tok Token, src *os.File, chunks []chunk.Chunk, opt SendOptions) error {
	ch := make(chan chunk.Chunk, len(chunks))
	for _, c := range chunks {
		ch <- c
	}
	close(ch)
	errs := make(chan error, len(chunks))
	err := Send(b.Context(), l.Addr().String(), tok, src, ch, func(c chunk.Chunk, err error) {
		if err != nil {
			errs <- err
		}
	}, opt)
	close(errs)
	if err == nil {
		err = <-errs
	}
	return err
}

// BenchmarkExtents sends trees over loopback, two streams: 1024 files of
// 64 KiB in 8 MiB chunks (128 extents a chunk) and 4096 files of 4 KiB in
// 4 MiB chunks (1024 extents a chunk), with a Layout at the sender and an
// ExtentSink at the receiver.
//
//	nice -n 19 go test -run '^$' -bench Extents -count 5 ./fallback
func BenchmarkExtents(b *testing.B) {
	for _, tc := range []struct {
		name            string
		files, fileSize int64
		chunkSize       int64
	}{{"1024x64KiB", 1024, 64 << 10, 8 << 20}, {"4096x4KiB", 4096, 4 << 10, 4 << 20}} {
		sizes := make([]int64, tc.files)
		for i := range sizes {
			sizes[i] = tc.fileSize
		}
		fx := extenttest.NewTree(b, sizes, tc.chunkSize)
		l, err := Listen("127.0.0.1:0", slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		for _, mode := range []SendMode{SendFile, ReadWrite} {
			b.Run(tc.name+"/"+mode.String(), func(b *testing.B) {
				b.SetBytes(tc.files * tc.fileSize)
				for b.Loop() {
					sink := &extenttest.Sink{Extents: fx.Sink.Extents} // a verified chunk is final
					tok, _ := NewToken()
					release := l.Expect(tok, sink)
					if err := benchSend(b, l, tok, nil, fx.Chunks, SendOptions{Streams: 2, Mode: mode, Layout: fx.Layout()}); err != nil {
						b.Fatal(err)
					}
					release()
				}
			})
		}
		l.Close()
	}
}

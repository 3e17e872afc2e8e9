// Command xferbench measures the fallback data channel between two processes, usually
// in two network namespaces (see netns.sh, which runs the whole comparison).
//
//	xferbench recv -listen 10.99.77.2:7700 -token HEX -out /tmp/dst -size 1073741824
//	xferbench send -addr 10.99.77.2:7700 -token HEX -src /tmp/src -mode sendfile -streams 2 -runs 3
//
// The receiver lands every transfer into the same -out file (preallocated to -size)
// and runs until killed. The sender computes chunk CRCs before timing, then times
// Send from the first dial until the last chunk is acknowledged (landed, read back,
// verified) and prints one line per run plus the median and best.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rxfer/rxfer/internal/crc32c"

	"github.com/rxfer/rxfer/chunk"
	"github.com/rxfer/rxfer/fallback"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: xferbench recv|send [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "recv":
		err = recv(os.Args[2:])
	case "send":
		err = send(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "xferbench:", err)
		os.Exit(1)
	}
}

type sink struct {
	f      *os.File
	size   int64
	landed atomic.Int64
	bad    atomic.Int64
}

func (s *sink) File() *os.File { return s.f }
func (s *sink) Admit(c chunk.Chunk) (int64, error) {
	if c.Offset+int64(c.Length) > s.size {
		return 0, fmt.Errorf("chunk %d ends past %d", c.Index, s.size)
	}
	return c.Offset, nil
}
func (s *sink) Landed(c chunk.Chunk, err error) {
	if err != nil {
		s.bad.Add(1)
		return
	}
	s.landed.Add(1)
}

func recv(args []string) error {
	fs := flag.NewFlagSet("recv", flag.ExitOnError)
	listen := fs.String("listen", ":7700", "listen address")
	tokHex := fs.String("token", "", "token (hex)")
	out := fs.String("out", "", "destination file")
	size := fs.Int64("size", 1<<30, "destination size")
	fs.Parse(args)
	tok, err := fallback.ParseToken(*tokHex)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(*size); err != nil {
		return err
	}
	l, err := fallback.Listen(*listen, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		return err
	}
	s := &sink{f: f, size: *size}
	release := l.Expect(tok, s)
	fmt.Println("listening", l.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	release()
	l.Close()
	fmt.Printf("landed %d chunks, %d failed\n", s.landed.Load(), s.bad.Load())
	return nil
}

func send(args []string) error {
	fs := flag.NewFlagSet("send", flag.ExitOnError)
	addr := fs.String("addr", "", "receiver address")
	tokHex := fs.String("token", "", "token (hex)")
	srcPath := fs.String("src", "", "source file")
	modeName := fs.String("mode", "sendfile", "sendfile or readwrite")
	streams := fs.Int("streams", 0, "parallel connections (0 = default)")
	window := fs.Int("window", 0, "unacked chunks per connection (0 = default)")
	chunkSize := fs.Int("chunk", 8<<20, "chunk size in bytes")
	runs := fs.Int("runs", 3, "number of timed runs")
	fs.Parse(args)
	tok, err := fallback.ParseToken(*tokHex)
	if err != nil {
		return err
	}
	mode, err := fallback.ParseSendMode(*modeName)
	if err != nil {
		return err
	}
	src, err := os.Open(*srcPath)
	if err != nil {
		return err
	}
	defer src.Close()
	chunks, size, err := plan(src, *chunkSize)
	if err != nil {
		return err
	}
	var times []time.Duration
	for run := range *runs {
		ch := make(chan chunk.Chunk, len(chunks))
		for _, c := range chunks {
			ch <- c
		}
		var acked, failed atomic.Int64
		done := func(c chunk.Chunk, err error) {
			if err != nil {
				failed.Add(1)
				fmt.Fprintln(os.Stderr, "chunk failed:", err)
			}
			if acked.Add(1) == int64(len(chunks)) {
				close(ch)
			}
		}
		start := time.Now()
		err := fallback.Send(context.Background(), *addr, tok, src, ch, done, fallback.SendOptions{Streams: *streams, Mode: mode, Window: *window})
		el := time.Since(start)
		if err != nil {
			return err
		}
		if failed.Load() != 0 {
			return fmt.Errorf("%d chunks failed", failed.Load())
		}
		times = append(times, el)
		fmt.Printf("run %d mode=%v streams=%d: %d bytes in %v = %.0f MB/s (%.2f Gbit/s)\n",
			run, mode, *streams, size, el.Round(time.Millisecond), float64(size)/el.Seconds()/1e6, float64(size)*8/el.Seconds()/1e9)
	}
	slices.Sort(times)
	best, med := times[0], times[len(times)/2]
	fmt.Printf("mode=%v streams=%d runs=%d: median %.0f MB/s (%.2f Gbit/s), best %.0f MB/s (%.2f Gbit/s)\n",
		mode, *streams, len(times), float64(size)/med.Seconds()/1e6, float64(size)*8/med.Seconds()/1e9,
		float64(size)/best.Seconds()/1e6, float64(size)*8/best.Seconds()/1e9)
	return nil
}

// plan splits src into chunks and computes their CRCs (outside the timed section).
func plan(src *os.File, chunkSize int) ([]chunk.Chunk, int64, error) {
	st, err := src.Stat()
	if err != nil {
		return nil, 0, err
	}
	size := st.Size()
	buf := make([]byte, chunkSize)
	var chunks []chunk.Chunk
	for off, i := int64(0), uint32(0); off < size; off, i = off+int64(chunkSize), i+1 {
		n := min(int64(chunkSize), size-off)
		if _, err := src.ReadAt(buf[:n], off); err != nil && err != io.EOF {
			return nil, 0, err
		}
		chunks = append(chunks, chunk.Chunk{Index: i, Offset: off, Length: uint32(n), CRC: crc32c.Checksum(buf[:n])})
	}
	return chunks, size, nil
}

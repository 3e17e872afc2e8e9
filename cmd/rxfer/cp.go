package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"golang.org/x/term"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/fallback"
	"github.com/rxfer/rxfer/internal/pki"
	"github.com/rxfer/rxfer/rdma"
	"github.com/rxfer/rxfer/service"
	"github.com/rxfer/rxfer/transfer"
)

// cpOptions are the flags of `rxfer cp`.
type cpOptions struct {
	force     bool
	policy    pb.TransportPolicy
	json      bool
	chunkSize int64
	streams   int
	token     string
	tls       *pki.Client // nil: plaintext
	// encryption and verify are the copy's --data-encryption and --verify.
	encryption pb.DataEncryption
	verify     pb.VerifyMode
	noResume   bool
	retries    int
	// recursive (-r) copies a directory as a tree; contents: its SRC ended
	// in "/" (the directory's contents go into DST); preserve keeps mode,
	// mtime and owner.
	recursive, contents, preserve bool
}

// creds are how the CLI connects to nodes.
func (o cpOptions) creds() service.Credentials {
	return service.Credentials{Token: o.token, TLS: o.tls}
}

func cmdCp(args []string) error {
	fs := flag.NewFlagSet("cp", flag.ContinueOnError)
	var o cpOptions
	fs.BoolVar(&o.force, "force", false, "replace the destination if it exists")
	transport := fs.String("transport", "auto", "transport: auto, tcp or rdma")
	fs.BoolVar(&o.json, "json", false, "print one JSON progress event per line")
	fs.Int64Var(&o.chunkSize, "chunk-size", 0, "chunk size in bytes (0: the sender's default)")
	fs.IntVar(&o.streams, "streams", 0, "parallel TCP streams (0: the sender's default)")
	tokenFile := fs.String("token-file", "", "bearer token for the nodes (default: $RXFER_TOKEN)")
	tlsFlags := addClientTLSFlags(fs)
	dataEnc := fs.String("data-encryption", "", "TCP data-channel encryption for this copy: auto, on or off (default: the sending node's --data-encryption)")
	verify := fs.String("verify", "crc32c", "crc32c, or mac: also a whole-file keyed BLAKE3 compared before commit (tampering on any data path is DataLoss)")
	fs.BoolVar(&o.noResume, "no-resume", false, "start over even if the destination keeps a partial file of this source")
	fs.BoolVar(&o.recursive, "r", false, "copy a directory and everything in it (a file copies as without -r)")
	fs.BoolVar(&o.recursive, "recursive", false, "same as -r")
	fs.BoolVar(&o.preserve, "preserve", true, "with -r: keep mode, mtime and (on a destination running as root) owner")
	fs.IntVar(&o.retries, "retries", DefaultRetries, "run the copy again this many times after a transient failure (unreachable or restarting node, reset connection), with backoff; each attempt resumes")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: rxfer cp [flags] SRC DST\n  SRC, DST: a local path or %s\n", endpointForms)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if fs.NArg() != 2 {
		return usagef("want SRC and DST, got %d arguments (usage: rxfer cp [--force] [--transport auto|tcp|rdma] [--json] SRC DST)", fs.NArg())
	}
	var ok bool
	if o.policy, ok = map[string]pb.TransportPolicy{"auto": pb.TransportPolicy_TRANSPORT_POLICY_AUTO,
		"tcp": pb.TransportPolicy_TRANSPORT_POLICY_TCP, "rdma": pb.TransportPolicy_TRANSPORT_POLICY_RDMA}[*transport]; !ok {
		return usagef("--transport %q: want auto, tcp or rdma", *transport)
	}
	if o.encryption, ok = map[string]pb.DataEncryption{"": pb.DataEncryption_DATA_ENCRYPTION_DEFAULT, "auto": pb.DataEncryption_DATA_ENCRYPTION_AUTO,
		"on": pb.DataEncryption_DATA_ENCRYPTION_ON, "off": pb.DataEncryption_DATA_ENCRYPTION_OFF}[*dataEnc]; !ok {
		return usagef("--data-encryption %q: want auto, on or off", *dataEnc)
	}
	if o.verify, ok = map[string]pb.VerifyMode{"crc32c": pb.VerifyMode_VERIFY_MODE_DEFAULT, "mac": pb.VerifyMode_VERIFY_MODE_MAC}[*verify]; !ok {
		return usagef("--verify %q: want crc32c or mac", *verify)
	}
	src, err := parseEndpoint(fs.Arg(0))
	if err != nil {
		return usageError{err.Error()}
	}
	dst, err := parseEndpoint(fs.Arg(1))
	if err != nil {
		return usageError{err.Error()}
	}
	if o.recursive {
		o.contents = src.Region == nil && len(src.Path) > 1 && strings.HasSuffix(src.Path, "/")
		if src.Region != nil || dst.Region != nil {
			return usagef("-r copies directories, not regions")
		}
		if o.verify == pb.VerifyMode_VERIFY_MODE_MAC {
			return usagef("--verify mac does not combine with -r (every chunk of a tree is CRC32C-verified)")
		}
	}
	if o.token, err = readToken(*tokenFile); err != nil {
		return err
	}
	if o.tls, err = tlsFlags.client(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.retries < 0 {
		return usagef("--retries %d: want 0 or more", o.retries)
	}
	rep := newReporter(os.Stdout, os.Stderr, o.json, term.IsTerminal(int(os.Stderr.Fd())))
	defer rep.done()
	return withRetries(ctx, o.retries, rep, func() error {
		switch {
		case src.Remote() && dst.Remote():
			// The user's token is for both nodes: the source presents it to the
			// destination (a node sends its own only to its configured peers).
			return remoteCopy(ctx, src.Node, o, &pb.CopyRequest{SourcePath: src.Path, SourceRegion: src.Region,
				DestNode: dst.Node, DestPath: dst.Path, DestRegion: dst.Region, DestToken: o.token}, rep)
		case src.Remote():
			return pull(ctx, src, dst.Path, o, rep)
		default:
			return push(ctx, src.Path, dst, o, rep)
		}
	})
}

// remoteCopy asks node to push and shows its progress stream.
func remoteCopy(ctx context.Context, node string, o cpOptions, req *pb.CopyRequest, rep reporter) error {
	conn, err := o.creds().Dial(node)
	if err != nil {
		return err
	}
	defer conn.Close()
	req.Overwrite, req.Transport, req.ChunkSize, req.Streams, req.NoResume = o.force, o.policy, o.chunkSize, int32(o.streams), o.noResume
	req.DataEncryption, req.Verify = o.encryption, o.verify
	req.Recursive, req.NoPreserve = o.recursive, !o.preserve
	req.TreeContents = req.TreeContents || o.contents
	stream, err := pb.NewTransferClient(conn).Copy(ctx, req)
	if err != nil {
		return err
	}
	for {
		e, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		rep.event(e)
	}
}

// localNode is this process acting as one end of a copy.
type localNode struct {
	node *transfer.Node
	root *transfer.Root
	data *fallback.Listener
}

func (l *localNode) close() {
	l.node.Shutdown()
	if l.data != nil {
		l.data.Close()
	}
	l.root.Close()
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// newLocalNode makes a node rooted at dir; dataHost, if not empty, gets a
// TCP data listener so the node can receive; expect, if not nil, restricts
// what it receives.
func newLocalNode(dir, dataHost string, expect *transfer.Expectation) (*localNode, error) {
	root, err := transfer.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	l := &localNode{root: root}
	cfg := transfer.Config{ID: "rxfer-cp", Root: root, Logger: quietLog, Expect: expect,
		RDMA: transfer.RDMAConfig{Options: rdma.Options{GIDIndex: rdma.AutoGID}}}
	if dataHost != "" {
		if l.data, err = fallback.Listen(net.JoinHostPort(dataHost, "0"), quietLog); err != nil {
			root.Close()
			return nil, err
		}
		cfg.Data = l.data
	}
	l.node = transfer.NewNode(cfg)
	return l, nil
}

// localErr names the local path a local node could not be made for.
func localErr(path string, err error) error {
	return service.ToStatus(fmt.Errorf("local path %q: %w", path, err))
}

// localDest splits a local destination into the directory to root a node
// at and the path beneath it: a directory receives the source's name.
func localDest(p string) (dir, rel string) {
	if st, err := os.Stat(p); (err == nil && st.IsDir()) || strings.HasSuffix(p, "/") {
		return p, "/"
	}
	return filepath.Dir(p), filepath.Base(p)
}

// push sends a local file to dst (a node, or another local path).
func push(ctx context.Context, srcPath string, dst endpoint, o cpOptions, rep reporter) error {
	// Like cp and scp, follow a symlink the user names: the CLI acts with the
	// user's own rights, so there is no export root to escape.
	if o.recursive && srcPath == "/" {
		return usagef("rxfer cp -r / copies the whole file system: name a directory")
	}
	if p, err := filepath.EvalSymlinks(srcPath); err == nil {
		srcPath = p
	}
	src, err := newLocalNode(filepath.Dir(srcPath), "", nil)
	if err != nil {
		return localErr(srcPath, err)
	}
	defer src.close()
	var peer transfer.Peer
	destPath := dst.Path
	if dst.Remote() {
		if peer, err = o.creds().DialPeer(dst.Node); err != nil {
			return err
		}
		defer peer.Close()
	} else {
		dir, rel := localDest(dst.Path)
		d, err := newLocalNode(dir, "127.0.0.1", nil)
		if err != nil {
			return localErr(dst.Path, err)
		}
		defer d.close()
		peer, destPath = d.node.LocalPeer(), rel
	}
	policy, err := service.PolicyFromProto(o.policy)
	if err != nil {
		return service.ToStatus(err)
	}
	req := transfer.PushRequest{
		SourcePath: filepath.Base(srcPath), DestNode: dst.Node, DestPath: destPath, Overwrite: o.force,
		Policy: policy, ChunkSize: o.chunkSize, Streams: o.streams, NoResume: o.noResume,
		DataEncryption: transfer.DataEncryption(o.encryption), Verify: transfer.VerifyMode(o.verify),
		Recursive: o.recursive, Contents: o.contents, Preserve: o.preserve,
	}
	if r := dst.Region; r != nil {
		req.DestPath, req.DestRegion = "", &transfer.RegionRef{Name: r.Name, Offset: r.Offset, Length: r.Length}
	}
	_, err = src.node.Push(ctx, req, peer, func(i transfer.Info) { rep.event(service.InfoToProto(i)) })
	return service.ToStatus(err)
}

// pull receives src's file: this process becomes a one-copy destination node
// (Peer API and data channel on the address that reaches the source, guarded
// by a one-time token) and asks the source to push to it. The source may be
// hostile: the node accepts exactly one Prepare, for the file, overwrite flag
// and size bound fixed here (transfer.Expectation), and a source that asks
// for anything else is refused, stops the copy and is named in the error.
func pull(ctx context.Context, src endpoint, dstPath string, o cpOptions, rep reporter) error {
	host, err := localAddrFor(src.Node)
	if err != nil {
		return err
	}
	dir, rel := localDest(dstPath)
	if rel == "/" {
		// Name the file here, so that the one Prepare accepted names it
		// exactly, rather than letting the source's name pick it.
		name := sourceBase(src)
		if name == "" {
			return usagef("source %s has no file name: name the local file", src)
		}
		rel = "/" + name
		if o.contents {
			rel = "/" // SRC/: the tree's contents go into the directory itself
		}
		if st, err := os.Stat(filepath.Join(dir, name)); err == nil && st.IsDir() && !o.recursive {
			return localErr(filepath.Join(dir, name), fmt.Errorf("%w: it is a directory", transfer.ErrExists))
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	expect := &transfer.Expectation{DestPath: rel, Overwrite: o.force, AllowTree: o.recursive, Violated: cancel}
	d, err := newLocalNode(dir, host, expect)
	if err != nil {
		return localErr(dstPath, err)
	}
	defer d.close()
	if expect.MaxSize, err = pullBound(dir, src); err != nil { // before the node serves
		return localErr(dstPath, err)
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return err
	}
	secret := make([]byte, 16)
	rand.Read(secret)
	token := hex.EncodeToString(secret)
	opts := service.Options{PeerOnly: true, Token: token, Logger: quietLog}
	pin, err := pullTLS(o, &opts)
	if err != nil {
		return err
	}
	srv := service.New(d.node, opts)
	go srv.Serve(lis)
	defer srv.Stop()
	err = remoteCopy(ctx, src.Node, o, &pb.CopyRequest{
		SourcePath: src.Path, SourceRegion: src.Region, DestNode: lis.Addr().String(), DestPath: rel, DestToken: token,
		DestTlsSha256: pin, TreeContents: o.recursive, // a tree's root is exactly rel, fixed here
	}, rep)
	if cause := context.Cause(ctx); errors.Is(cause, transfer.ErrUnexpected) {
		return service.ToStatus(fmt.Errorf("source node %s misbehaved and was refused (nothing was written for it): %w", src.Node, cause))
	}
	if err == nil && !committedOne(d.node) {
		return service.ToStatus(fmt.Errorf("%w: source node %s reported success but committed no file here", transfer.ErrIncomplete, src.Node))
	}
	return err
}

// sourceBase is the name a pulled file gets in a local directory: the
// source file's base name or the region's name ("" if there is none).
func sourceBase(src endpoint) string {
	if src.Region != nil {
		return src.Region.Name
	}
	switch name := path.Base(src.Path); name {
	case "/", ".", "..":
		return ""
	default:
		return name
	}
}

// pullBound is the most bytes a pull accepts: the window's length when the
// user named one, else what the local file system has free (the CLI cannot
// know a file's size before the source announces it).
func pullBound(dir string, src endpoint) (int64, error) {
	if r := src.Region; r != nil && r.Length > 0 {
		return r.Length, nil
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	if st.Blocks == 0 { // a file system without a size (ramfs)
		return math.MaxInt64, nil
	}
	bsize := uint64(max(st.Bsize, 1))
	return int64(min(st.Bavail, math.MaxInt64/bsize) * bsize), nil
}

// committedOne reports whether node received and committed a file.
func committedOne(node *transfer.Node) bool {
	for _, i := range node.List() {
		if i.Direction == transfer.Incoming && i.State == transfer.StateCommitted {
			return true
		}
	}
	return false
}

// localAddrFor returns this host's address on the route to node.
func localAddrFor(node string) (string, error) {
	c, err := net.Dial("udp", node) // no packet is sent: this only picks the route
	if err != nil {
		return "", fmt.Errorf("no route to %s: %w", node, err)
	}
	defer c.Close()
	host, _, err := net.SplitHostPort(c.LocalAddr().String())
	return host, err
}

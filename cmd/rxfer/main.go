// Command rxfer moves files between nodes over RDMA or zero-copy TCP.
//
//	rxfer serve --root DIR [--listen 127.0.0.1:7470] [--data-listen 127.0.0.1:7471] [--node-id NAME] [--token-file F] [--peer HOST:PORT] [--insecure]
//	rxfer cp [--force] [--transport auto|tcp] [--json] SRC DST
//	rxfer status [--watch] HOST:PORT
//	rxfer cancel HOST:PORT ID
//	rxfer devices [--json]
//	rxfer regions HOST:PORT [add NAME SIZE | add NAME --file PATH | rm NAME]
//	rxfer bench [--size 1G] [--dir DIR] [--transport auto|tcp|rdma] [--json]
//	rxfer certs init --dir DIR --trust-domain TD --nodes ID[=HOST],... [--clients NAME,...]
//	rxfer version
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/grpc/status"
)

const usage = `rxfer moves files between nodes over RDMA or zero-copy TCP, verified end to end.

Usage:
  rxfer serve --root DIR [--listen 127.0.0.1:7470] [--data-listen 127.0.0.1:7471] [--metrics-listen 127.0.0.1:7472] [--node-id NAME] [--token-file F] [--insecure]
              [--log-format text|json] [--log-level info] [--drain-timeout 30s]
              [--tls-cert F --tls-key F --tls-client-ca F [--tls-peer-ca F] [--authz POLICY.toml]]
  rxfer cp [--force] [--transport auto|tcp] [--json] [--tls-ca F --tls-cert F --tls-key F] SRC DST
  rxfer status [--watch] HOST:PORT
  rxfer certs init --dir DIR --trust-domain TD --nodes ID[=HOST],... [--clients NAME,...]
  rxfer cancel HOST:PORT ID
  rxfer version

SRC and DST are local paths or remote paths beneath a node's export root:
  HOST:PORT:/path   HOST:/path (port 7470)   [IPv6]:PORT:/path
or a window of a memory region on a node: HOST:PORT:@NAME[:OFFSET[:LENGTH]]
A local side makes this command act as that end of the copy (no local daemon needed).

Run 'rxfer COMMAND -h' for a command's flags.
`

// usageError is a mistake on the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	cmds := map[string]func([]string) error{
		"serve": cmdServe, "cp": cmdCp, "status": cmdStatus, "cancel": cmdCancel, "version": cmdVersion,
		"devices": cmdDevices, "regions": cmdRegions, "bench": cmdBench, "certs": cmdCerts,
	}
	cmd, ok := cmds[args[0]]
	if !ok {
		if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
			fmt.Print(usage)
			return 0
		}
		fmt.Fprintf(os.Stderr, "rxfer: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	err := cmd(args[1:])
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "rxfer %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(os.Stderr, "rxfer %s: %s\n", args[0], describe(err))
		return 1
	}
}

// describe renders an error as one line; gRPC statuses show their code.
func describe(err error) string {
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s (%s)", oneLine(st.Message()), st.Code())
	}
	return oneLine(err.Error())
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// readToken reads a bearer token file ("" = no token; RXFER_TOKEN is used
// then). Like ssh with a private key, it refuses a file that group or
// others have any access to: the token is the node's whole credential.
func readToken(path string) (string, error) {
	if path == "" {
		return os.Getenv("RXFER_TOKEN"), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat() // the file opened, not whatever has the name now
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("token file %s has mode %#o: group or others can access it, so it is refused; run chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return tok, nil
}

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/service"
)

const rpcTimeout = 10 * time.Second

// nodeCommand runs a command that talks to one node: it parses the flags,
// checks the arguments after HOST:PORT with argsOK (else prints usage),
// connects, and calls fn under rpcTimeout.
func nodeCommand(name, usage string, args []string, argsOK func(rest []string) bool,
	fn func(ctx context.Context, client pb.TransferClient, rest []string) error) error {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	tokenFile := fs.String("token-file", "", "bearer token for the node (default: $RXFER_TOKEN)")
	tlsFlags := addClientTLSFlags(fs)
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if fs.NArg() < 1 || !argsOK(fs.Args()[1:]) {
		return usagef("%s", usage)
	}
	creds, err := tlsFlags.credentials(*tokenFile)
	if err != nil {
		return err
	}
	client, done, err := transferClient(fs.Arg(0), creds)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	return fn(ctx, client, fs.Args()[1:])
}

func cmdStatus(args []string) error {
	args, watch := cmdStatusArgs(args)
	show := showStatus
	if watch {
		show = watchStatus // watch.go
	}
	return nodeCommand("status", "usage: rxfer status [--watch] HOST:PORT", args,
		func(rest []string) bool { return len(rest) == 0 }, show)
}

func showStatus(ctx context.Context, client pb.TransferClient, _ []string) error {
	var conn peer.Peer
	info, err := client.GetNodeInfo(ctx, &pb.GetNodeInfoRequest{}, grpc.Peer(&conn))
	if err != nil {
		return err
	}
	list, err := client.ListTransfers(ctx, &pb.ListTransfersRequest{})
	if err != nil {
		return err
	}
	fmt.Printf("node %s (rxfer %s), root %s, %d active of %d\n", info.NodeId, info.Version, info.ExportRoot,
		info.ActiveTransfers, info.MaxConcurrentTransfers)
	if line := tlsStatus(conn.AuthInfo); line != "" {
		fmt.Println("  " + line)
	}
	for _, t := range info.Transports {
		note := "available " + t.Address
		if !t.Available {
			note = "unavailable: " + t.Reason
		}
		fmt.Printf("  %s: %s\n", transportName(t.Transport), note)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tDIR\tSTATE\tPROGRESS\tTRANSPORT\tSOURCE\tDESTINATION\tERROR")
	for _, t := range list.Transfers {
		dir := map[pb.Direction]string{pb.Direction_DIRECTION_OUTGOING: "out", pb.Direction_DIRECTION_INCOMING: "in"}[t.Direction]
		state := stateName(t.State)
		if t.Resumable {
			state += ", resumable"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s/%s\t%s\t%s\t%s:%s\t%s\n", t.TransferId, dir, state,
			size(t.BytesDone), size(t.BytesTotal), transportName(t.Transport), t.SourcePath, t.DestNode, t.DestPath, oneLine(t.Error))
	}
	return w.Flush()
}

func cmdCancel(args []string) error {
	// --discard is taken before HOST:PORT or after ID.
	discard := false
	args = slices.DeleteFunc(slices.Clone(args), func(a string) bool {
		if a == "--discard" || a == "-discard" {
			discard = true
			return true
		}
		return false
	})
	return nodeCommand("cancel", "usage: rxfer cancel [--discard] HOST:PORT ID\n  --discard: remove the partial file instead of keeping it for a resume", args,
		func(rest []string) bool { return len(rest) == 1 },
		func(ctx context.Context, client pb.TransferClient, rest []string) error {
			resp, err := client.CancelTransfer(ctx, &pb.CancelTransferRequest{TransferId: rest[0], Discard: discard})
			if err != nil {
				return err
			}
			note := ""
			switch {
			case discard:
				note = ", partial file discarded"
			case resp.Transfer.Resumable:
				note = ", partial file kept: the same copy resumes it (cancel --discard removes it)"
			}
			fmt.Printf("%s: %s%s\n", resp.Transfer.TransferId, stateName(resp.Transfer.State), note)
			return nil
		})
}

func cmdVersion(args []string) error {
	fmt.Printf("rxfer %s\n", service.Version)
	return nil
}

// transferClient connects to a node's Transfer API.
func transferClient(node string, creds service.Credentials) (pb.TransferClient, func(), error) {
	addr, err := parseNode(node)
	if err != nil {
		return nil, nil, usageError{err.Error()}
	}
	conn, err := creds.Dial(addr)
	if err != nil {
		return nil, nil, err
	}
	return pb.NewTransferClient(conn), func() { conn.Close() }, nil
}

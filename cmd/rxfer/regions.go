package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	pb "github.com/rxfer/rxfer/api/rxferv1"
)

const regionsUsage = `usage:
  rxfer regions HOST:PORT                       list the node's regions
  rxfer regions HOST:PORT add NAME SIZE         register SIZE bytes of anonymous memory (K, M, G suffixes)
  rxfer regions HOST:PORT add NAME --file PATH  register a file beneath the node's root
  rxfer regions HOST:PORT rm NAME               deregister a region
Copy to and from regions with rxfer cp and HOST:PORT:@NAME[:OFFSET[:LENGTH]].`

func cmdRegions(args []string) error {
	fs := flag.NewFlagSet("regions", flag.ContinueOnError)
	tokenFile := fs.String("token-file", "", "bearer token for the node (default: $RXFER_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if fs.NArg() < 1 {
		return usagef("%s", regionsUsage)
	}
	client, done, err := transferClient(fs.Arg(0), *tokenFile)
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	rest := fs.Args()[1:]
	switch {
	case len(rest) == 0:
		return listRegions(ctx, client)
	case rest[0] == "add" && len(rest) == 3:
		size, err := parseSize(rest[2])
		if err != nil {
			return usagef("region size: %v", err)
		}
		r, err := client.RegisterRegion(ctx, &pb.RegisterRegionRequest{Name: rest[1], Size: size})
		if err != nil {
			return err
		}
		fmt.Printf("region %s: %s, %s\n", r.Name, size2(r.Size), r.Backing)
		return nil
	case rest[0] == "add" && len(rest) == 4 && rest[2] == "--file":
		r, err := client.RegisterRegion(ctx, &pb.RegisterRegionRequest{Name: rest[1], File: rest[3]})
		if err != nil {
			return err
		}
		fmt.Printf("region %s: %s, file %s\n", r.Name, size2(r.Size), r.Backing)
		return nil
	case rest[0] == "rm" && len(rest) == 2:
		if _, err := client.DeregisterRegion(ctx, &pb.DeregisterRegionRequest{Name: rest[1]}); err != nil {
			return err
		}
		fmt.Printf("region %s deregistered\n", rest[1])
		return nil
	}
	return usagef("%s", regionsUsage)
}

func listRegions(ctx context.Context, client pb.TransferClient) error {
	resp, err := client.ListRegions(ctx, &pb.ListRegionsRequest{})
	if err != nil {
		return err
	}
	if len(resp.Regions) == 0 {
		fmt.Println("no regions")
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSIZE\tBACKING\tIN USE\tCREATED")
	for _, r := range resp.Regions {
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", r.Name, size2(r.Size), r.Backing, r.InUse,
			time.UnixMilli(r.CreatedUnixMs).Format(time.RFC3339))
	}
	return w.Flush()
}

// size2 shows a byte count exactly and in binary units.
func size2(n int64) string { return fmt.Sprintf("%d bytes (%s)", n, size(n)) }

package main

import (
	"context"
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
	return nodeCommand("regions", regionsUsage, args, func(rest []string) bool {
		return len(rest) == 0 || rest[0] == "add" && (len(rest) == 3 || len(rest) == 4 && rest[2] == "--file") ||
			rest[0] == "rm" && len(rest) == 2
	}, func(ctx context.Context, client pb.TransferClient, rest []string) error {
		switch {
		case len(rest) == 0:
			return listRegions(ctx, client)
		case rest[0] == "rm":
			if _, err := client.DeregisterRegion(ctx, &pb.DeregisterRegionRequest{Name: rest[1]}); err != nil {
				return err
			}
			fmt.Printf("region %s deregistered\n", rest[1])
			return nil
		}
		req := &pb.RegisterRegionRequest{Name: rest[1]}
		if len(rest) == 4 {
			req.File = rest[3]
		} else {
			size, err := parseSize(rest[2])
			if err != nil {
				return usagef("region size: %v", err)
			}
			req.Size = size
		}
		r, err := client.RegisterRegion(ctx, req)
		if err != nil {
			return err
		}
		fmt.Printf("region %s: %s, %s\n", r.Name, size2(r.Size), r.Backing)
		return nil
	})
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

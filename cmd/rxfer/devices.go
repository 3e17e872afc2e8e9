package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/rxfer/rxfer/api/rxferv1"
	"github.com/rxfer/rxfer/service"
	"github.com/rxfer/rxfer/transfer"
)

// cmdDevices prints the RDMA devices this host can use, like `ibv_devinfo`
// and `show_gids` in one table.
func cmdDevices(args []string) error {
	fs := flag.NewFlagSet("devices", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the devices as JSON (rxfer.v1.RdmaDevice messages)")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if fs.NArg() != 0 {
		return usagef("usage: rxfer devices [--json]")
	}
	devs, err := transfer.Devices()
	if *asJSON {
		out := &pb.NodeInfo{RdmaDevices: service.DevicesToProto(devs)}
		if err != nil {
			out.Transports = []*pb.TransportStatus{{Transport: pb.Transport_TRANSPORT_RDMA, Reason: err.Error()}}
		}
		b, _ := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(out)
		fmt.Println(string(b))
		return nil
	}
	if err != nil || len(devs) == 0 {
		reason := "no verbs device found"
		if err != nil {
			reason = err.Error()
		}
		fmt.Printf("no RDMA devices: %s\n", reason)
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "DEVICE\tPORT\tSTATE\tLINK\tMTU\tNETDEV\tADDRESSES\tROCE V2 GIDS\tUSABLE")
	for _, d := range devs {
		var addrs, gids []string
		for _, a := range d.Addrs {
			addrs = append(addrs, a.String())
		}
		for _, g := range d.GIDs {
			if g.Type == "RoCE v2" {
				gids = append(gids, fmt.Sprintf("%d=%s", g.Index, g.Addr))
			}
		}
		usable := "yes"
		if !d.Usable {
			usable = "no: " + d.Reason
		}
		fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", d.Name, d.Port, d.State, d.LinkLayer, d.ActiveMTU,
			d.Netdev, strings.Join(addrs, ","), strings.Join(gids, " "), usable)
	}
	return w.Flush()
}

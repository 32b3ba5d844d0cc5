// cni-driver runs one CNI network configuration list through libcni, the
// library containerd and CRI-O use, so that a plugin can be exercised by the
// same client code a real runtime uses, without a runtime.
//
// Built by the overlay-tests harness (tests/src/cni_clients/libcni.rs) with
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build
//
// against Debian's golang-github-appc-cni-dev. That package is libcni 1.1.2
// (CNI spec up to 1.0.0): it has ADD, CHECK, DEL, VERSION and validation, but
// no STATUS or GC (libcni 1.2 / spec 1.1.0), so neither is offered here.
//
// Usage:
//
//	cni-driver add|check|del <conflist-file> <container-id> <netns-path> <ifname>
//	cni-driver validate|version <conflist-file>
//
// Environment:
//
//	CNI_DRIVER_PATH       plugin directories, ':'-separated (required)
//	CNI_DRIVER_CACHE_DIR  libcni result cache (default: libcni's /var/lib/cni)
//	CNI_DRIVER_ARGS       CNI_ARGS pairs "K=V;K=V", e.g. the CRI's
//	                      "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;..."
//	CAP_ARGS              JSON object of runtimeConfig capability arguments,
//	                      e.g. {"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]};
//	                      libcni passes a key only to plugins whose conf lists
//	                      it under "capabilities".
//	CNI_DRIVER_TIMEOUT    seconds for the whole operation (default 60)
//
// The result of ADD (and the version map of VERSION) goes to stdout as JSON;
// CHECK, DEL and VALIDATE print "{}" on success. Errors go to stderr and the
// exit status is 1 (2 for usage errors).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
)

func usage(msg string) {
	fmt.Fprintf(os.Stderr, "cni-driver: %s\n"+
		"usage: cni-driver add|check|del <conflist-file> <container-id> <netns-path> <ifname>\n"+
		"       cni-driver validate|version <conflist-file>\n"+
		"(libcni 1.1.2 has no STATUS or GC)\n", msg)
	os.Exit(2)
}

func fail(op string, err error) {
	fmt.Fprintf(os.Stderr, "cni-driver %s: %v\n", op, err)
	os.Exit(1)
}

func printJSON(v interface{}) {
	out, err := json.Marshal(v)
	if err != nil {
		fail("encoding output", err)
	}
	fmt.Println(string(out))
}

// parseArgs turns "K=V;K=V" into libcni's ordered pairs, keeping the order
// (the CRI sends IgnoreUnknown first).
func parseArgs(s string) [][2]string {
	var pairs [][2]string
	for _, kv := range strings.Split(s, ";") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			usage(fmt.Sprintf("CNI_DRIVER_ARGS entry %q is not K=V", kv))
		}
		pairs = append(pairs, [2]string{k, v})
	}
	return pairs
}

func main() {
	if len(os.Args) < 3 {
		usage("missing arguments")
	}
	op, confFile := os.Args[1], os.Args[2]

	path := os.Getenv("CNI_DRIVER_PATH")
	if path == "" {
		usage("CNI_DRIVER_PATH (plugin directories) is not set")
	}
	timeout := 60 * time.Second
	if t := os.Getenv("CNI_DRIVER_TIMEOUT"); t != "" {
		secs, err := strconv.Atoi(t)
		if err != nil {
			usage(fmt.Sprintf("CNI_DRIVER_TIMEOUT %q: %v", t, err))
		}
		timeout = time.Duration(secs) * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	list, err := libcni.ConfListFromFile(confFile)
	if err != nil {
		fail("loading "+confFile, err)
	}
	cni := libcni.NewCNIConfigWithCacheDir(strings.Split(path, ":"), os.Getenv("CNI_DRIVER_CACHE_DIR"), nil)

	switch op {
	case "validate":
		if _, err := cni.ValidateNetworkList(ctx, list); err != nil {
			fail(op, err)
		}
		printJSON(struct{}{})
		return
	case "version":
		versions := map[string][]string{}
		for _, p := range list.Plugins {
			info, err := cni.GetVersionInfo(ctx, p.Network.Type)
			if err != nil {
				fail(op+" "+p.Network.Type, err)
			}
			versions[p.Network.Type] = info.SupportedVersions()
		}
		printJSON(versions)
		return
	case "add", "check", "del":
	case "status", "gc":
		usage(op + " needs libcni >= 1.2; Debian ships 1.1.2")
	default:
		usage("unknown operation " + op)
	}

	if len(os.Args) != 6 {
		usage("add/check/del take <conflist-file> <container-id> <netns-path> <ifname>")
	}
	rt := &libcni.RuntimeConf{
		ContainerID: os.Args[3],
		NetNS:       os.Args[4],
		IfName:      os.Args[5],
		Args:        parseArgs(os.Getenv("CNI_DRIVER_ARGS")),
	}
	if caps := os.Getenv("CAP_ARGS"); caps != "" {
		if err := json.Unmarshal([]byte(caps), &rt.CapabilityArgs); err != nil {
			usage(fmt.Sprintf("CAP_ARGS is not a JSON object: %v", err))
		}
	}

	switch op {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(op, err)
		}
		printJSON(result)
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			fail(op, err)
		}
		printJSON(struct{}{})
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			fail(op, err)
		}
		printJSON(struct{}{})
	}
}

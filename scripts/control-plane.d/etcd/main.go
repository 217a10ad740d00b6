// Command etcd runs a single-member etcd (go.etcd.io/etcd/server/v3/embed) on
// loopback for the local test control plane started by scripts/control-plane.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	dataDir := flag.String("data-dir", "", "directory for etcd's data (required)")
	clientPort := flag.Int("client-port", 2379, "port for client traffic on 127.0.0.1")
	peerPort := flag.Int("peer-port", 2380, "port for peer traffic on 127.0.0.1")
	noFsync := flag.Bool("unsafe-no-fsync", true, "skip fsync (test data only)")
	logLevel := flag.String("log-level", "warn", "zap log level")
	flag.Parse()
	if *dataDir == "" {
		log.Fatal("--data-dir is required")
	}

	client, err := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", *clientPort))
	if err != nil {
		log.Fatal(err)
	}
	peer, err := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", *peerPort))
	if err != nil {
		log.Fatal(err)
	}

	cfg := embed.NewConfig()
	cfg.Name = "control-plane"
	cfg.Dir = *dataDir
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = *noFsync
	cfg.LogLevel = *logLevel
	cfg.LogOutputs = []string{"stderr"}

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		log.Fatalf("starting etcd: %v", err)
	}
	defer e.Close()

	select {
	case <-e.Server.ReadyNotify():
		log.Printf("etcd ready on %s", client)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		log.Fatal("etcd did not become ready within 60s")
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.Printf("received %s, stopping etcd", s)
	case err := <-e.Err():
		log.Printf("etcd error: %v", err)
		e.Close()
		os.Exit(1)
	}
}

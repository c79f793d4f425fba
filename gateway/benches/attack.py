# Push latency through whisk-gateway with and without half-open connections held open.
# usage: attack.py <gateway-bin> <port> <pushes-per-phase>  (docs/benchmarks.md, "Listener under a
# connection attack"); needs prometheus-pushgateway on PATH and 127.0.0.x source addresses.
import socket, subprocess, time, sys, http.client, os
bin=sys.argv[1]; port=int(sys.argv[2]); n=int(sys.argv[3])
pgw=subprocess.Popen(["prometheus-pushgateway","--web.listen-address=127.0.0.1:%d"%(port+1),"--persistence.file=","--push.disable-consistency-check"],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
gw=subprocess.Popen([bin,"--listen","127.0.0.1:%d"%port,"--pushgateway-url","http://127.0.0.1:%d"%(port+1),"--auth","none","--worker-threads","1","--head-timeout","60s"],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)
time.sleep(3)
body=("# TYPE whisk_activations_total counter\nwhisk_activations_total{status=\"success\"} %d\n# TYPE orders_total counter\n"+"".join('orders_total{region="r%d"} 1\n'%i for i in range(20)))
path="/metrics/job/openwhisk_actions/instance/legit/namespace/guest/action/hello"
def own(series):
    c=http.client.HTTPConnection("127.0.0.1",port,timeout=10); c.request("GET","/metrics"); t=c.getresponse().read().decode(); c.close()
    return [l for l in t.splitlines() if l.startswith(series)]
def phase(label):
    c=http.client.HTTPConnection("127.0.0.1",port,timeout=10)
    lat=[]; fails=0
    for i in range(n):
        t0=time.perf_counter()
        try:
            c.request("PUT",path,body=body%i,headers={"Content-Type":"text/plain; version=0.0.4"})
            r=c.getresponse(); r.read()
            if r.status!=202: fails+=1
        except Exception:
            fails+=1; c.close(); c=http.client.HTTPConnection("127.0.0.1",port,timeout=10)
        lat.append((time.perf_counter()-t0)*1000)
    c.close(); lat.sort()
    print("| %s | %d | %.3f ms | %.3f ms | %.3f ms | %d |"%(label,n,lat[len(lat)//2],lat[int(len(lat)*0.99)],lat[-1],fails), flush=True)
def half_open(count, first_addr):
    socks=[]
    for i in range(count):
        s=socket.socket(); s.bind(("127.0.0.%d"%(first_addr+i%4),0)); s.connect(("127.0.0.1",port))
        if i%2==0: s.send(b"PUT /metrics/job/openwhisk_actions HTTP/1.1\r\nHost: x\r\nConte")
        socks.append(s)
    return socks
try:
    print(os.popen("uptime").read().strip())
    print("| phase | pushes | p50 | p99 | max | failed |\n|---|---|---|---|---|---|")
    phase("no attack")
    a=half_open(2000,2)
    phase("2 000 half-open connections held (4 addresses)")
    b=half_open(3000,10)
    phase("5 000 half-open connections attempted (8 addresses; cap 4 096: oldest shed)")
    print(own("whisk_gateway_connections"))
    for s in a+b: s.close()
    time.sleep(1)
    phase("after the attack")
    print(os.popen("uptime").read().strip())
finally:
    gw.kill(); pgw.kill(); gw.wait(); pgw.wait()

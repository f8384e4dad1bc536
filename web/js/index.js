// Points the mode links at this host, so the landing page works wherever it is served.
// The hrefs in the HTML (http://localhost:PORT/) stay as the fallback.

if (location.protocol === 'http:' || location.protocol === 'https:') {
  for (const link of document.querySelectorAll('a[data-port]')) {
    // `hostname` keeps the brackets of an IPv6 address, so it can go straight into a URL.
    link.href = `${location.protocol}//${location.hostname}:${link.dataset.port}${link.dataset.path ?? '/'}`;
  }
}

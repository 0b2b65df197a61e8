// Counts the images the browser could not decode, so a headless browser can check the page from its DOM.
window.addEventListener("load", function () {
  var images = document.images, broken = 0;
  for (var i = 0; i < images.length; i++) {
    if (!images[i].complete || images[i].naturalWidth === 0) { broken++; }
  }
  document.body.dataset.images = String(images.length);
  document.body.dataset.brokenImages = String(broken);
});

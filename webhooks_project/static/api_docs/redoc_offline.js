// ReDoc's bundle hard-codes one image from its CDN: the logo of the side menu's
// "API docs by Redocly" link. Nothing on these pages may come from outside the
// deployment (the Content-Security-Policy refuses it, and logs an error), so
// that one address is replaced by an empty picture before ReDoc sets it, by
// attribute or by property; the link keeps its text. Loaded before ReDoc.
"use strict";
(function () {
  const REMOTE_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg";
  const EMPTY_PICTURE = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E";
  const local = (value) => (value === REMOTE_LOGO ? EMPTY_PICTURE : value);

  const setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    return setAttribute.call(this, name, name === "src" ? local(value) : value);
  };
  const src = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "src");
  Object.defineProperty(HTMLImageElement.prototype, "src", {
    ...src,
    set(value) {
      src.set.call(this, local(value));
    },
  });
})();
